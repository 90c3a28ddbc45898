"""A tiny bridge built on mautrix-python's appservice library, run as a subprocess by
tests/appservice/test_mautrix.py (mautrix runs on asyncio; the tests on Twisted).

It registers a puppet, joins the room it is given, says hello as the puppet,
then relays back (prints) the first message a real user sends in that room.
Each step prints one JSON line on stdout for the test to follow.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mautrix.appservice import AppService
from mautrix.types import EventType, MessageEvent


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(config: dict) -> None:
    appservice = AppService(
        server=config["homeserver"], domain=config["domain"], as_token=config["as_token"],
        hs_token=config["hs_token"], bot_localpart=config["bot"], id=config["id"],
        log="bridge")
    relayed: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_event(event: object) -> None:
        if isinstance(event, MessageEvent) and event.type == EventType.ROOM_MESSAGE \
                and event.sender == config["real_user"] and not relayed.done():
            relayed.set_result(event.content.body)

    appservice.matrix_event_handler(on_event)
    await appservice.start(host="127.0.0.1", port=config["port"])
    say(step="listening")
    puppet = appservice.intent.user(config["puppet"])
    await puppet.ensure_registered()
    say(step="registered")
    await puppet.join_room(config["room_id"])
    say(step="joined")
    event_id = await puppet.send_text(config["room_id"], "hello from the bridge")
    say(step="sent", event_id=str(event_id))
    body = await asyncio.wait_for(relayed, timeout=60)
    say(step="relayed", body=body)
    await appservice.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
