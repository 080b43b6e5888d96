"""The Faust worker: agents, windows, rollups, detectors and the batch pipeline behind them."""
