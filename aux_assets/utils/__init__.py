"""Small dependency-free helpers shared by the core and the Dagster layer: names that become
paths, URLs, message text, retry timing, checksums and atomic JSON files."""
