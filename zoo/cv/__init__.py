"""Computer-vision model families and their shared box utilities."""
