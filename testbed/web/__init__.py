"""The live dashboard (issue #17): a page on 127.0.0.1 that shows the running CDN and acts on it.

* :mod:`testbed.web.view` - the page's messages (:mod:`contract.dashboard`) from plain data (pure);
* :mod:`testbed.web.sampler` - samples a running network from inside its hosts' namespaces;
* :mod:`testbed.web.actions` - fail, recover, drain, restore, link down/up, purge, as the CLI does them;
* :mod:`testbed.web.server` - the aiohttp server (page, event stream, actions) on its own thread;
* ``static/`` - the page (HTML, JavaScript, CSS) and the vendored graph library, no build step.
"""
