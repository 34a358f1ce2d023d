"""The metrics logger's progress bar: what it draws at a flush is that flush's numbers."""

from __future__ import annotations

from tokred_train.run.log import MetricsLogger


def _last_draw(err: str) -> str:
    """The bar as last drawn: tqdm redraws in place after a carriage return."""
    return err.rstrip("\n").split("\r")[-1]


def test_the_bar_shows_the_loss_of_the_flush_just_logged(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, tensorboard=False, progress=True, total_steps=4)
    bar = logger._bar
    bar.mininterval, bar.miniters, bar.dynamic_miniters = 0, 0, False  # draw at every update
    capsys.readouterr()
    for step, loss, rate in ((2, 1.5, 100.0), (4, 0.25, 300.0)):
        logger.log_steps(
            [{"step": step - 1, "loss": 9.0}, {"step": step, "loss": loss, "tokens_per_s": rate}]
        )
        drawn = _last_draw(capsys.readouterr().err)
        assert f"loss={loss:.4f}" in drawn and f"tok/s={rate:.0f}" in drawn, drawn
        assert f"{step}/4" in drawn, drawn
    logger.close()
