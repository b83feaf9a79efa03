"""Figures and the report page of every result: ``build`` analyses, plots and reports any
result directory in one page format (``page``)."""
