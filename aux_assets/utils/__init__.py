"""Small dependency-free helpers shared by the core and the Dagster layer: names that become
paths, URLs, message text, retry timing, timestamps, checksums and atomic JSON files."""
