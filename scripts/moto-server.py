"""
Starts moto's server (the local AWS API emulator the AWS tests and the dev stack use) with one fix:
moto 5.2.5's DMS models return timestamps as ISO strings where the AWS JSON protocol requires epoch
seconds (getmoto/moto issue 9763), which makes AWS SDK v3 fail with "Expected real number, got implicit
NaN". Every `to_dict` of moto.dms.models is wrapped to turn such strings into epoch floats.
Usage: python scripts/moto-server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""
import inspect
import re
import sys
from datetime import datetime

import moto.dms.models as dms_models
from moto.server import main

ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?$")


def to_epoch(value):
    if isinstance(value, str) and ISO_TIME.match(value):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            # moto's utcnow() is naive UTC
            from datetime import timezone
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    if isinstance(value, dict):
        return {key: to_epoch(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_epoch(item) for item in value]
    return value


def wrap(original):
    def to_dict(self, *args, **kwargs):
        return to_epoch(original(self, *args, **kwargs))

    return to_dict


for _, cls in inspect.getmembers(dms_models, inspect.isclass):
    if cls.__module__ == dms_models.__name__ and "to_dict" in cls.__dict__:
        cls.to_dict = wrap(cls.__dict__["to_dict"])

if __name__ == "__main__":
    main(sys.argv[1:])
