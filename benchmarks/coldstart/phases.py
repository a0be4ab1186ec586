"""One model server's start, phase by phase, in this process: imports, listen + model load, first answer.

Run by benchmarks/coldstart/run.py as a fresh interpreter per run; it builds the same
`ModelServer` that `tidal model-server` runs, then asks it over HTTP. Prints one JSON line
of wall-clock instants (time.time()) that the parent subtracts from its launch instant.
With a fourth argument `warm:RUNTIMES` it first does what a warm pool process does before
its assignment (`tidal.server.warm.preload` and freezing the imports) and marks `preloaded`:
what follows is what a replica from the pool still has to do.
"""

import time

T_MAIN = time.time()

import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


async def _ask(port: int, name: str, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


async def main(base: str, name: str, body: str, warm: str = "") -> dict:
    marks = {"main": T_MAIN}
    if warm:
        import gc

        from tidal.server.warm import preload
        preload(warm.removeprefix("warm:").split(","))
        gc.collect()
        gc.freeze()
        marks["preloaded"] = time.time()
    import argparse
    from tidal.server.main import ModelServer, add_arguments, settings_from_args
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(
        ["--port", "0", "--rest_api_host", "127.0.0.1", "--rest_api_port", "0", "--model_name", name,
         "--model_base_path", base]))
    server = ModelServer(settings)  # its constructor imports the manager, the app and the data plane
    marks["imports"] = time.time()
    await server.start()  # listens, then loads the model (the runtime is imported with it)
    marks["model_load"] = time.time()
    statuses = [await _ask(server.port, name, body.encode())]
    marks["first_inference"] = time.time()
    statuses.append(await _ask(server.port, name, body.encode()))
    marks["second_inference"] = time.time()
    marks["statuses"] = statuses
    await server.stop()
    return marks


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))), flush=True)
