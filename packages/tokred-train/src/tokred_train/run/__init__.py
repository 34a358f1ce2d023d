"""Training: the loop and everything one step of it touches.

setup       device, process group, run folder, resume, data and model, optimizer
step        one micro-batch -> loss sums per task, for each family's loss path
losses      the target rows of a batch and the head's loss on them only
sampler     which samples go into micro-batch m (a pure function of seed and m)
prefetch    micro-batches collated ahead in a background thread
optim       AdamW and the warm-up + cosine schedule
window      the metrics between two flushes, read with one host sync
log         metrics.jsonl, TensorBoard, the progress bar
validation  held-out loss per task under the run's reduction
conflict    the tasks' gradient conflict per layer and group (run.conflict_every)
checkpoint  crash-safe checkpoints and an exact resume
distributed rank awareness under torchrun
loop        `train()`: the Trainer that ties them together
"""
