"""XSVS analysis for Bluesky/Tiled."""
