"""tabgrid: volunteer GPU compute in the browser. See README for the map of its parts."""
