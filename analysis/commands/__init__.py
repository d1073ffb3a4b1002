"""The sub-commands of clipfit-analyze, one module each: load, measure, tabulate, draw, write.

Each command module holds the typed options of its sub-command (also named ``OPTIONS``), a
``run_*`` function that writes tables, figures and sidecars into an output folder and returns the
figures it made (so ``report`` reuses every analysis unchanged), and ``execute`` (run, then print
what the console shows). :mod:`analysis.cli` imports a command module only when its sub-command
runs, so the command modules import the figure modules (matplotlib) at their top.

What they share: :mod:`.common` (the options every sub-command has, and the command modules'
one contact with clipfit's orchestration) and :mod:`.bundle` (writing one figure with its data).
Nothing is imported here, so importing one command module does not import the others.

Adding an analysis touches: a pure table function (``analysis/<name>.py``) and its columns
(``analysis/schemas.py``), a draw function and caption (``figures/<name>.py``), a command module
here (options, ``run_<name>`` ending in :func:`.bundle.write_figure`, ``execute``), and its entry in
``analysis.cli.COMMANDS`` with one flag per options field; ``report.py`` as well if the report
should show it.
"""
