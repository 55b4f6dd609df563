"""``etser.upstream``: where stage 2's config module lived before stage 2 moved into ``etser/features/``.

Kept because its name is data: the shipped Whisper configs say ``factory: etser.upstream:whisper_decoder``
(the factory string is hashed into their dump tag, so rewriting it would rename their dumps), and
``python -m etser.upstream tag`` is the command later stages and users call.  Everything is
``etser.features.upstream``'s."""

from __future__ import annotations

import sys

from etser.features.upstream import *  # noqa: F401,F403  (the public names, for old imports)
from etser.features.upstream import main, whisper_decoder, whisper_encoder  # noqa: F401  (named in configs)

if __name__ == "__main__":
    sys.exit(main())
