"""`python app.py [flags]` is `playground serve [flags]`: the Preference Playground in the browser."""

import sys

from cli.main import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
