"""A run's description and home: its validated settings, run directory, lock and checkpoint files."""
