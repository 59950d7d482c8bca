"""The web console: server-rendered pages over the control plane."""
