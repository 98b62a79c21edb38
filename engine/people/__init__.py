"""People: the persons the gallery's faces belong to, found by clustering or named after folders, named by hand.

`PeopleRegistry` (registry.py) keeps them beside the vector store; `engine.people.cluster` is the grouping
rule. `Engine.people(model)` opens the registry of a model's store; index runs sync it.
"""

from engine.people.cluster import ClusterParams
from engine.people.registry import FaceRef, NamedFace, PeopleRegistry, Person, PersonRef, SyncReport, clean_name

__all__ = ["ClusterParams", "FaceRef", "NamedFace", "PeopleRegistry", "Person", "PersonRef", "SyncReport", "clean_name"]
