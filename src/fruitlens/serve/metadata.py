"""Before 0.2: the species information's module and class (`Catalog`), now `serve.species_info` and
`SpeciesInformation`. Kept, with a DeprecationWarning, until 0.3.0 (CHANGELOG.md)."""

import warnings

from .species_info import ATTRIBUTION, FRUITS360
from .species_info import SpeciesInformation as Catalog

warnings.warn(
    "fruitlens.serve.metadata is now fruitlens.serve.species_info (Catalog: SpeciesInformation); "
    "the old names go in 0.3.0",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ATTRIBUTION", "FRUITS360", "Catalog"]
