"""The results side: journal (truth), checks (history + one module per check), gates, summary,
junit, report. Reads journals; never imports the runner, the SDK or a target."""
