/*
 * sisguard dev/test launcher for a genuine single Elasticsearch node.
 *
 * Elasticsearch 8/9 is not published on Maven Central as a runnable distribution, but the server
 * jar, the netty4 HTTP/transport plugin and the test framework are. Elasticsearch's own integration
 * tests start nodes whose plugins come from the classpath (MockNode + MockPluginsService); this class
 * does the same thing WITHOUT the test-only mocks: it builds a plain production Node (real
 * NodeServiceProvider, real HTTP transport, real search service) and only swaps the plugin loader for
 * MockPluginsService so that classpath plugins are used instead of a distribution's modules/ folder.
 *
 * It lives in package org.elasticsearch.node because NodeConstruction / NodeServiceProvider are
 * package-private. It targets Elasticsearch 9.x (checked with 9.5.3); deploy/dev/search builds it.
 *
 * Why it can run as root: the "can not run elasticsearch as root" refusal and the bootstrap checks
 * live in org.elasticsearch.bootstrap.Elasticsearch (the distribution's entry point), which this
 * launcher does not use. The node itself does not check the user.
 *
 * Configuration: system properties
 *   sisguard.search.home   path.home (required); config is read from <home>/config/elasticsearch.yml
 *                          and logging from <home>/config/log4j2.properties
 *   sisguard.search.plugins comma-separated plugin class names; a name starting with '?' is optional
 *                          (skipped when the class is not on the classpath)
 */
package org.elasticsearch.node;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class SisguardSearchNode {

    private static final String DEFAULT_PLUGINS = "org.elasticsearch.transport.netty4.Netty4Plugin,"
        + "org.elasticsearch.node.SisguardRootRest";

    private SisguardSearchNode() {}

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable t) {
            System.err.println("sisguard-search-node: FAILED to start the Elasticsearch node: " + t);
            t.printStackTrace(System.err);
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    private static void run() throws Exception {
        String home = System.getProperty("sisguard.search.home");
        if (home == null || home.isEmpty()) {
            throw new IllegalArgumentException("system property sisguard.search.home is not set");
        }
        Path homeDir = Path.of(home).toAbsolutePath();
        Path configDir = homeDir.resolve("config");

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String raw : System.getProperty("sisguard.search.plugins", DEFAULT_PLUGINS).split(",")) {
            String name = raw.trim();
            if (name.isEmpty()) continue;
            boolean optional = name.startsWith("?");
            if (optional) name = name.substring(1);
            try {
                plugins.add(Class.forName(name).asSubclass(Plugin.class));
            } catch (ClassNotFoundException e) {
                if (optional == false) throw new IllegalStateException("plugin class not on classpath: " + name, e);
                System.err.println("sisguard-search-node: optional plugin not available: " + name);
            }
        }

        Settings input = Settings.builder().put(Environment.PATH_HOME_SETTING.getKey(), homeDir.toString()).build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(input, Map.of(), configDir, () -> "sisguard-dev");

        LogConfigurator.setClusterName(env.settings().get("cluster.name", "elasticsearch"));
        LogConfigurator.setNodeName(env.settings().get("node.name", "sisguard-dev"));
        LogConfigurator.configure(env, true);

        List<String> names = new ArrayList<>();
        for (Class<? extends Plugin> p : plugins) names.add(p.getSimpleName());
        System.err.println("sisguard-search-node: Elasticsearch " + org.elasticsearch.Build.current().version()
            + " on Java " + Runtime.version() + ", plugins " + names);

        NodeServiceProvider provider = new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment environment, PluginsLoader pluginsLoader) {
                return new MockPluginsService(environment.settings(), environment, plugins);
            }
        };
        Node node = new Node(NodeConstruction.prepareConstruction(env, null, provider, true));

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                System.err.println("sisguard-search-node: stopping");
                node.prepareForClose();
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace(System.err);
            } finally {
                stopped.countDown();
            }
        }, "sisguard-search-shutdown"));

        node.start();
        System.err.println("sisguard-search-node: started");
        stopped.await();
    }
}
