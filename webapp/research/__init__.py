"""Research workflows after the reading: worklist, exports and imports, dashboards, API.

TODO: retraining from the app is not built yet. It would let a researcher train a new model
version from adjudicated cases as a background job with progress, choosing the label source
(ground truth or consensus) and the split, then read its evaluation report and promote it.
"""
