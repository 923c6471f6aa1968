"""One module per architecture family; each registers its converters with ``@register`` on import.

The package imports every module here (``robustdiag.metrics.bounds``), so adding a family is adding a file.
"""
