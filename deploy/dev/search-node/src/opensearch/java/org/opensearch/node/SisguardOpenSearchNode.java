/*
 * sisguard dev/test launcher for a genuine single OpenSearch node (deploy/dev/search with
 * ENGINE=opensearch). Same idea as SisguardSearchNode for Elasticsearch: OpenSearch's server jar,
 * its modules (netty4 transport, analysis-common, mapper-extras, painless, ...) and its test
 * framework are on Maven Central; MockNode starts a node whose plugins come from the classpath.
 * MockNode only swaps in test mocks when their marker plugins are loaded, which we never do, so
 * this is the production HTTP layer, search service, etc.
 *
 * Runs as root: the root refusal lives in the distribution's bootstrap (org.opensearch.bootstrap),
 * which is not used here.
 *
 * System properties:
 *   sisguard.search.home     path.home (required); config from <home>/config/opensearch.yml and
 *                            <home>/config/log4j2.properties
 *   sisguard.search.plugins  comma-separated plugin class names; '?' prefix = optional
 */
package org.opensearch.node;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.plugins.Plugin;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class SisguardOpenSearchNode {

    private static final String DEFAULT_PLUGINS = "org.opensearch.transport.Netty4ModulePlugin,"
        + "?org.opensearch.analysis.common.CommonAnalysisModulePlugin,"
        + "?org.opensearch.index.mapper.MapperExtrasModulePlugin,"
        + "?org.opensearch.painless.PainlessModulePlugin";

    private SisguardOpenSearchNode() {}

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable t) {
            System.err.println("sisguard-search-node: FAILED to start the OpenSearch node: " + t);
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
        Settings input = Settings.builder().put(Environment.PATH_HOME_SETTING.getKey(), homeDir.toString()).build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(input, Map.of(), homeDir.resolve("config"), () -> "sisguard-dev");
        LogConfigurator.setNodeName(env.settings().get("node.name", "sisguard-dev"));
        LogConfigurator.configure(env);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (String raw : System.getProperty("sisguard.search.plugins", DEFAULT_PLUGINS).split(",")) {
            String name = raw.trim();
            if (name.isEmpty()) continue;
            boolean optional = name.startsWith("?");
            if (optional) name = name.substring(1);
            try {
                Class<? extends Plugin> c = Class.forName(name).asSubclass(Plugin.class);
                plugins.add(c);
                names.add(c.getSimpleName());
            } catch (ClassNotFoundException e) {
                if (optional == false) throw new IllegalStateException("plugin class not on classpath: " + name, e);
                System.err.println("sisguard-search-node: optional plugin not available: " + name);
            }
        }
        System.err.println("sisguard-search-node: OpenSearch " + org.opensearch.Version.CURRENT
            + " on Java " + Runtime.version() + ", plugins " + names);

        // MockNode re-reads <path.home>/config/opensearch.yml
        Node node = new MockNode(input, plugins);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                System.err.println("sisguard-search-node: stopping");
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
