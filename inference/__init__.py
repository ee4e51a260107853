"""CT analysis pipeline for post-thrombectomy hyperdensities, usable without Django.

Research use only; not a medical device.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
