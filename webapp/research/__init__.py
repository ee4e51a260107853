"""Research workflows after the reading: worklist, exports and imports, dashboards, API, and
retraining classical models from adjudicated cases (``retraining``), with promotion.
"""
