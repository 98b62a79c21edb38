"""The command line and the offline tools: `python -m engine` commands, the demo, fetching and converting the
weights, the evaluation and its plots. Tools import the library; the library never imports tools."""
