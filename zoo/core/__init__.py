"""Base classes every zoo family builds on."""
