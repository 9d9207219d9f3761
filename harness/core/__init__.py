"""What every part of the harness stands on: problems, steppers, the machine, result
files, tables, plots and timing. Imports backends only."""
