"""``python -m ardm.training`` (and ``torchrun ... -m ardm.training``): the ``ardm train`` options."""

from ardm.commands.train import main

raise SystemExit(main())
