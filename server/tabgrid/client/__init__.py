"""The researcher's side: the SDK (``Client``), progress display and tiling helpers."""

from tabgrid.client.sdk import Client, TabgridError

__all__ = ["Client", "TabgridError"]
