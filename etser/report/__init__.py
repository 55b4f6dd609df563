"""Stage 5: RESULTS.md tables from the scored experiments (classifiers, fusion, captioning) and the
training curves' plots; reads metrics.json, never training code."""
