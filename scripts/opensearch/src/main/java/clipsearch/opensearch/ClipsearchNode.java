package clipsearch.opensearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * Embedded single-node OpenSearch with the k-NN plugin, for clipsearch's
 * development and tests (started by scripts/opensearch_node.py).
 *
 * <p>Everything comes from Maven Central jars: the server, the modules a
 * distribution would ship (netty4 transport, analysis-common, painless,
 * reindex, mapper-extras) and the k-NN plugin, all loaded as "classpath
 * plugins" through the protected {@code Node(Environment, Collection, boolean)}
 * constructor. No bootstrap checks and no security manager are installed.
 *
 * <p>Arguments are {@code key=value} node settings; they override the defaults
 * below. {@code path.home} is required.
 */
public final class ClipsearchNode {

    /** Plugins loaded by class name so the launcher compiles without the k-NN jar. */
    private static final String[] PLUGIN_CLASSES = {
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.knn.plugin.KNNPlugin",
    };

    private ClipsearchNode() {}

    /** Exposes the protected constructor that accepts classpath plugins. */
    private static final class PluginNode extends Node {
        PluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "clipsearch")
            .put("node.name", "node-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9250")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // One node: replicas could never be assigned, so default to 0 (green health).
            .put("cluster.default_number_of_replicas", 0);
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("expected key=value, got: " + arg);
                System.exit(2);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        String home = settings.get("path.home");
        if (home == null) {
            System.err.println("path.home=<dir> is required");
            System.exit(2);
        }
        Path configDir = Paths.get(home).resolve("config");
        Files.createDirectories(configDir);

        String nodeName = settings.get("node.name");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), configDir, () -> nodeName);
        // Console logging only; opensearch_node.py redirects stdout to its log file.
        LogConfigurator.configureWithoutConfig(environment.settings());
        Logger logger = LogManager.getLogger(ClipsearchNode.class);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : PLUGIN_CLASSES) {
            plugins.add(Class.forName(name).asSubclass(Plugin.class));
        }

        Node node = new PluginNode(environment, plugins);
        CountDownLatch keepAlive = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                logger.warn("error while closing node", e);
            } finally {
                keepAlive.countDown();
            }
        }, "clipsearch-node-shutdown"));

        node.start();
        logger.info("clipsearch node started: http://{}:{}",
            settings.get("network.host"), settings.get("http.port"));
        keepAlive.await();
    }
}
