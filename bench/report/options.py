"""The report's choices, in a module light enough for the command line to import."""

FORMATS = {"html": "report.html", "md": "report.md", "latex": "report.tex", "csv": "report.csv"}  # -> file name
GROUP_SETS = {"overall-under": ("overall", "under"), "all": ("overall", "well", "under")}  # --groups
