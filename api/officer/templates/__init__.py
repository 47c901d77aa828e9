"""Package marker so setuptools ships these files (package-data) in a non-editable install."""
