"""The synergy study: arms, runs, statistics, gradient conflict, report."""
