"""What a Python shop would build instead of UCS: a grpcio server serving the
same `ucs.v1.Api/Call` (code generated from proto/ucs/v1/ucs.proto by
grpcio-tools), with the same sessions and the same methods, running the same
plugin files unchanged with a stand-in `ucs` object (bench/plugins/
trivial_middleware.py, or the four documented plugins of plugins/). The
benchmark's peer; loopback only; exits by itself after --lifetime seconds.

Methods: agents.list, agents.setStatus (through the status hook, then the
agent.status callbacks, in order, as UCS does) and config.users.get
(through its middleware chain).

usage: python_peer.py --port PORT --sid SID --gen-dir DIR
                      [--middleware-plugin FILE] [--plugins-dir DIR]
                      [--agents N] [--lifetime SECONDS]
"""

import argparse
import asyncio
import functools
import importlib.util
import json
import logging
import os
import sys
import types

import grpc


ADMIN = {'id': 1, 'username': 'admin', 'displayname': 'Administrator',
         'superuser': True, 'agent': False}
# The same agents as `ucs serve --demo`, and --agents N more, agent001 to
# agentN, as the suite adds them to UCS.
DEMO_AGENTS = [('alice', 'Alice Smith'), ('bob', 'Bob Jones'), ('carol', 'Carol White')]

AGENT_OFFLINE, AGENT_READY, AGENT_AUX, AGENT_BUSY = 0, 1, 2, 3


class ApiError(Exception):
    """An error with the gRPC status it maps to."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ProcessingError(Exception):
    pass


class InvalidDataInput(Exception):
    pass


class PermissionDenied(Exception):
    pass


def install_plugin_modules():
    """`constants`, `events` and `error` as plugins import them."""
    constants = types.ModuleType('constants')
    constants.AGENT_OFFLINE, constants.AGENT_READY = AGENT_OFFLINE, AGENT_READY
    constants.AGENT_AUX, constants.AGENT_BUSY = AGENT_AUX, AGENT_BUSY
    constants.AGENT_STATE_ENUM = (0, 1, 2, 3)
    events = types.ModuleType('events')
    events.EVENT_AGENT_STATUS = 'agent.status'
    events.EVENT_SHARED_DATA = 'shared.data'
    error = types.ModuleType('error')
    error.ProcessingError, error.InvalidDataInput = ProcessingError, InvalidDataInput
    error.PermissionDenied = PermissionDenied
    for module in (constants, events, error):
        sys.modules[module.__name__] = module


class Agent(dict):
    """`agents.Agent`: a read-only mapping that also reads as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Server:
    """Users, agents, the status hook, callbacks and middleware chains."""

    def __init__(self, agent_count):
        names = DEMO_AGENTS + [
            (f'agent{i:03}', f'Agent {i:03}') for i in range(1, (agent_count or 0) + 1)]
        self.users = [dict(ADMIN)] + [
            {'id': i + 2, 'username': u, 'displayname': d, 'superuser': False, 'agent': True}
            for i, (u, d) in enumerate(names)]
        self.agents = {user['id']: {'id': user['id'], 'username': user['username'],
                                    'displayname': user['displayname'],
                                    'status': AGENT_OFFLINE, 'reason': ''}
                       for user in self.users if user['agent']}
        self.status_hook = None
        self.callbacks = {}
        self.chains = {}
        self.methods = {
            'agents.list': self.agents_list,
            'agents.setStatus': self.set_status,
            'config.users.get': self.users_get,
        }

    def agents_list(self, caller, *params):
        if params:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, 'agents.list takes no parameters')
        return [dict(agent) for agent in self.agents.values()]

    def set_status(self, caller, agent_id, status, reason=''):
        agent = self.agents.get(agent_id)
        if agent is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f'no agent {agent_id}')
        if status not in (0, 1, 2, 3):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, 'status')
        previous = Agent(agent)
        if self.status_hook is not None:
            try:
                status, reason = self.status_hook(Agent(agent), status, reason)
            except ProcessingError as error:
                raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
            if status is None:
                raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, reason or 'Blocked by hook')
        agent['status'], agent['reason'] = status, reason
        for callback in self.callbacks.get('agent.status', ()):
            try:
                callback(Agent(agent), {'previous_status': previous['status'],
                                        'previous_reason': previous['reason']})
            except Exception:  # noqa: BLE001 (a failed callback changes nothing, D5)
                logging.exception('callback failed')
        return dict(agent)

    def users_get(self, caller, user_id=None):
        if not caller['superuser']:
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, 'not a superuser')
        if user_id is None:
            return [dict(user) for user in self.users]
        for user in self.users:
            if user['id'] == user_id:
                return dict(user)
        raise ApiError(grpc.StatusCode.NOT_FOUND, f'no user {user_id}')


class StandInUcs:
    """The `ucs` object a plugin's constructor gets, as far as the
    documented plugins use it."""

    def __init__(self, server, name):
        self._server = server
        self.log = StandInLog(name)
        self.api = StandInApi(server)
        self.agents = StandInAgents(server)
        self.shared = StandInShared()
        self.tree = StandInTree(server)

    def addCallback(self, event, callback):  # noqa: N802 (the plugin API's names)
        self._server.callbacks.setdefault(event, []).append(callback)

    def removeCallback(self, event, callback):  # noqa: N802
        self._server.callbacks.get(event, []).remove(callback)


class StandInLog:
    """printf-style and lazy, as Python's logging is."""

    def __init__(self, name):
        self._logger = logging.getLogger(name)

    def dev(self, message, *args):
        self._logger.log(5, message, *args)

    def dbug(self, message, *args):
        self._logger.debug(message, *args)

    def info(self, message, *args):
        self._logger.info(message, *args)

    def warn(self, message, *args):
        self._logger.warning(message, *args)

    def err(self, message, *args):
        self._logger.error(message, *args)


class StandInApi:
    def __init__(self, server):
        self._server = server

    def addMiddleware(self, method, middleware):  # noqa: N802
        if method not in self._server.methods and not method.startswith('config.users.'):
            raise ValueError(f'unknown method {method}')
        self._server.chains.setdefault(method, []).append(middleware)

    def removeMiddleware(self, method, middleware):  # noqa: N802
        self._server.chains.get(method, []).remove(middleware)


class StandInAgents:
    def __init__(self, server):
        self._server = server

    def getAgents(self):  # noqa: N802
        return [Agent(agent) for agent in self._server.agents.values()]

    def addChangeStatusHook(self, hook):  # noqa: N802
        self._server.status_hook = hook

    def removeChangeStatusHook(self):  # noqa: N802
        self._server.status_hook = None


class StandInShared:
    def __init__(self):
        self.hooks = {}

    def addChangeHook(self, identificator, hook):  # noqa: N802
        self.hooks[identificator] = hook

    def removeChangeHook(self, identificator):  # noqa: N802
        self.hooks.pop(identificator, None)


class StandInTree:
    def __init__(self, server):
        self._server = server

    def getUsers(self, field):  # noqa: N802
        return {user['id']: user[field] for user in self._server.users}


def load_plugin(path, server):
    """Imports a plugin file and constructs and starts its class, as UCS does."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = getattr(module, module.UCS_PLUGIN)(StandInUcs(server, name))
    start = getattr(plugin, 'start', None)
    if callable(start):
        if hasattr(plugin, 'daemon'):
            plugin.daemon = True  # the peer exits by itself; a thread must not keep it
        start()
    return plugin


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--sid', required=True)
    parser.add_argument('--gen-dir', required=True)
    parser.add_argument('--middleware-plugin')
    parser.add_argument('--plugins-dir')
    parser.add_argument('--agents', type=int)
    parser.add_argument('--lifetime', type=float, default=600)
    args = parser.parse_args()

    sys.path.insert(0, args.gen_dir)
    from ucs.v1 import ucs_pb2, ucs_pb2_grpc  # generated by grpcio-tools

    logging.basicConfig(level=logging.INFO)
    install_plugin_modules()
    server = Server(args.agents)
    sessions = {args.sid: ADMIN}
    files = [args.middleware_plugin] if args.middleware_plugin else []
    if args.plugins_dir:
        files += sorted(os.path.join(args.plugins_dir, name) for name in os.listdir(args.plugins_dir)
                        if name.endswith('.py') and name != '__init__.py')
    plugins = [load_plugin(path, server) for path in files]

    def call(sid, method, args_json):
        user = sessions.get(sid)
        if user is None:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, 'unknown session')
        builtin = server.methods.get(method)
        if builtin is None:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, f'unknown method {method}')
        params = json.loads(args_json) if args_json.strip() else []
        handler = builtin
        # The first registered middleware is the outermost (D2).
        for middleware in reversed(server.chains.get(method, ())):
            handler = functools.partial(middleware, handler)
        try:
            return handler(dict(user), *params)
        except (ProcessingError, InvalidDataInput) as error:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        except PermissionDenied as error:
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, str(error)) from None

    class ApiServicer(ucs_pb2_grpc.ApiServicer):
        async def Call(self, request, context):  # noqa: N802 (generated name)
            try:
                result = call(request.sid, request.method, request.args_json)
            except ApiError as error:
                await context.abort(error.code, str(error))
            return ucs_pb2.CallResponse(
                result_json=json.dumps(result, separators=(',', ':'), ensure_ascii=False))

    async def serve():
        grpc_server = grpc.aio.server()
        ucs_pb2_grpc.add_ApiServicer_to_server(ApiServicer(), grpc_server)
        grpc_server.add_insecure_port(f'127.0.0.1:{args.port}')
        await grpc_server.start()
        try:
            await asyncio.wait_for(grpc_server.wait_for_termination(), args.lifetime)
        except asyncio.TimeoutError:
            pass
        await grpc_server.stop(0)

    asyncio.run(serve())
    for plugin in reversed(plugins):
        stop = getattr(plugin, 'stop', None)
        if callable(stop):
            stop()


if __name__ == '__main__':
    main()
