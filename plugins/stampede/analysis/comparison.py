from stampede.state.history import compare, judged_histograms, trend  # TEMPORARY shim until the typed branch lands
