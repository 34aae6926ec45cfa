"""The store: its files (no symbolic link ever followed) and the one index layer over them."""
