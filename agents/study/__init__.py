"""Multi-seed studies of normalization variants: grid, runner, aggregation, plots."""
