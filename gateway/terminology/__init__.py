"""Terminology services shared by operations and mapping modules (ConceptMaps: ``conceptmaps``)."""
