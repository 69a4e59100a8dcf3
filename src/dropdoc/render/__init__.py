"""Renderers: a Diagnosis (or lab result) to text (rich) or JSON."""
