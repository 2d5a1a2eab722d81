"""One module per ``safepref`` sub-command: ``add_arguments(parser)`` and ``run(args) -> int``."""
