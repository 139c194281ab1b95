"""`python -m cli COMMAND …`: the `playground` command without the console script (e.g. under
`accelerate launch -m cli train --engine trl …`)."""

from cli.main import main

main()
