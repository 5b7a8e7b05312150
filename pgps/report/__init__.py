"""Tables and figures of the article, rendered from small files the workflow keeps.

Imports matplotlib and pandas, so ``import pgps`` never imports this subpackage.
"""
