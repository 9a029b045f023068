"""One module per `ikd` command; each exposes register(app). Heavy imports (torch) stay inside the
command functions so that `ikd --help` is quick."""
