"""The command line: `playground COMMAND …` (see `cli.main`). The one layer that parses flags; it
sits above every other (`playground` ← `evals` ← `service` ← `ui` ← `bench` ← `cli`)."""
