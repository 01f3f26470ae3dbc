"""The jobs behind `python -m tfsparse <job>`: one module per job.

Each job module defines `HELP` (one line), `add_arguments(parser)` and
`run(args)`, and is listed in `tfsparse.cli.JOBS`.
"""
