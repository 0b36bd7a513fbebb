"""Modules at the official SDK's ``tinker.lib`` paths (``tinkex.lib.retry_handler``)."""
