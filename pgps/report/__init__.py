"""Tables and figures of the article, rendered from small files the workflow keeps.

The renderers import matplotlib, pandas and scipy, so ``import pgps`` never imports this
subpackage; importing the subpackage itself stays light: it only exposes the fixed output list
of ``pgps report`` (:data:`OUTPUTS`, :func:`report_outputs`) for workflow managers.
"""

from pgps.report.outputs import OUTPUTS, report_outputs

__all__ = ["OUTPUTS", "report_outputs"]
