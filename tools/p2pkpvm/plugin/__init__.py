"""The pytest plugin: session cluster, fixtures, deadlines, crash checks, run summary."""
