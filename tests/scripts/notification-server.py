#!/usr/bin/python3
"""A small but real freedesktop notification server, for tests/tests/systemd_desktop.rs.

It owns org.freedesktop.Notifications on the bus at ADDRESS (python3-dbus on a GLib main
loop, python3-gi), implements Notify, CloseNotification, GetCapabilities and
GetServerInformation, and writes one JSON line per call to RECORD: what each Notify carried
(app name, replaces_id, summary, body, actions, hints, timeout), the id it returned, and the
caller's uid and pid as the bus daemon reports them. It shows nothing.

When the file TRIGGER appears (a user's click, as the test plays it), it removes it and emits
ActionInvoked(id, key) for the first action the latest Notify offering actions carried.

Usage: notification-server.py ADDRESS RECORD TRIGGER
"""

import json
import os
import sys

import dbus
import dbus.bus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


def plain(value):
    """D-Bus values as JSON ones (a hint's byte as a number)."""
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16,
                          dbus.UInt32, dbus.UInt64)):
        return int(value)
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Array, list, tuple, dbus.Struct)):
        return [plain(v) for v in value]
    if isinstance(value, (dbus.Dictionary, dict)):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


class Server(dbus.service.Object):
    def __init__(self, bus, record):
        super().__init__(bus, PATH)
        self.bus = bus
        self.record_file = open(record, "a", encoding="utf-8")
        self.next_id = 1
        # (id, action key) of the latest notification offering an action.
        self.offered = None

    def record(self, entry):
        self.record_file.write(json.dumps(entry) + "\n")
        self.record_file.flush()

    def caller(self, sender):
        daemon = self.bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
        uid = daemon.GetConnectionUnixUser(sender, dbus_interface="org.freedesktop.DBus")
        pid = daemon.GetConnectionUnixProcessID(sender, dbus_interface="org.freedesktop.DBus")
        return int(uid), int(pid)

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u",
                         sender_keyword="sender")
    def Notify(self, app_name, replaces_id, app_icon, summary, body, actions, hints,
               expire_timeout, sender=None):
        if replaces_id:
            nid = int(replaces_id)
        else:
            nid = self.next_id
            self.next_id += 1
        uid, pid = self.caller(sender)
        actions = [str(a) for a in actions]
        if actions:
            self.offered = (nid, actions[0])
        self.record({
            "call": "Notify", "id": nid, "app_name": str(app_name),
            "replaces_id": int(replaces_id), "app_icon": str(app_icon),
            "summary": str(summary), "body": str(body), "actions": actions,
            "hints": plain(hints), "expire_timeout": int(expire_timeout),
            "uid": uid, "pid": pid,
        })
        return dbus.UInt32(nid)

    @dbus.service.method(NAME, in_signature="u", out_signature="")
    def CloseNotification(self, nid):
        self.record({"call": "CloseNotification", "id": int(nid)})
        # 3: closed by a call to CloseNotification.
        self.NotificationClosed(nid, 3)

    @dbus.service.method(NAME, in_signature="", out_signature="as")
    def GetCapabilities(self):
        self.record({"call": "GetCapabilities"})
        return ["actions", "body", "body-markup"]

    @dbus.service.method(NAME, in_signature="", out_signature="ssss")
    def GetServerInformation(self):
        return ("fl-test-notifications", "forcelogout tests", "1", "1.2")

    @dbus.service.signal(NAME, signature="us")
    def ActionInvoked(self, nid, action_key):
        pass

    @dbus.service.signal(NAME, signature="uu")
    def NotificationClosed(self, nid, reason):
        pass

    def poll_trigger(self, trigger):
        if os.path.exists(trigger):
            os.remove(trigger)
            if self.offered is not None:
                nid, key = self.offered
                self.record({"call": "ActionInvoked", "id": nid, "action_key": key})
                self.ActionInvoked(dbus.UInt32(nid), key)
            else:
                self.record({"call": "ActionInvoked", "id": None, "action_key": None})
        return True


def main():
    address, record, trigger = sys.argv[1:4]
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    server = Server(bus, record)
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    server.record({"call": "ready", "name": NAME, "unique": bus.get_unique_name()})
    GLib.timeout_add(100, server.poll_trigger, trigger)
    loop = GLib.MainLoop()
    bus.call_on_disconnection(lambda _: loop.quit())
    loop.run()
    del name


if __name__ == "__main__":
    main()
