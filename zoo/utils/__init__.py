"""Small utilities shared by every part of zoo."""
