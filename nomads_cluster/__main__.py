"""``python -m nomads_cluster``: the command line without installing the package.

Heroku's buildpack installs requirements.txt and nothing else, so the Procfile's
release phase runs the commands this way, from the repository's root.
"""

from .cli import main

if __name__ == "__main__":
    main(prog_name="nomads-cluster")
