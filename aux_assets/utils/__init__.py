"""Small helpers shared by the core and the Dagster layer: names that become paths, URLs,
message text, retry timing, timestamps, checksums, atomic JSON files, pystac items from JSON,
concurrent tasks."""
