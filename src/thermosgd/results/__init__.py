"""Result files: one schema (``schema``), one atomic writer (``io``), run directories
(``rundir``), result kinds (``locate``) and readers of older schema versions (``compat``)."""
