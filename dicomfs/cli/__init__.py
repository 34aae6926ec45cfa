"""The `dicomfs` command line and what it prints."""
