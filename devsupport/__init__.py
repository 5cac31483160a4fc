"""Helpers shared by the tests and the bench: a real registry process and its access log, and
OCI image-layout basics. Not shipped: the wheel holds reconciler* only."""
